from services.notification.main import main

main()
