from services.user.main import main

main()
