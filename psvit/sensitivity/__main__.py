from psvit.cli.sensitivity import main

main()
