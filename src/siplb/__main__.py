from siplb.cli import main

main()
