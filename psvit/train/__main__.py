from psvit.cli.train import main

main()
