from services.order.main import main

main()
