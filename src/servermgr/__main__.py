from servermgr.cli import main

main()
