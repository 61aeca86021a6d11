from buzz.cli import main

main()
