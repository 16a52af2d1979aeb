from psvit.cli.prune import main

main()
