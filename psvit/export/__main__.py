from psvit.cli.export import main

main()
