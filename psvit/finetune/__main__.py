from psvit.cli.finetune import main

main()
