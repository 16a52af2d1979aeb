from psvit.cli.search import main

main()
