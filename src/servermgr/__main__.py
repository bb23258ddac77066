from servermgr.main import main

main()
