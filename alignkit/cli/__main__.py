from alignkit.cli.main import main

main()
