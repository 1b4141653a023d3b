from dse.app.main import main

main()
