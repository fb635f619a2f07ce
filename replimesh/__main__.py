from replimesh.cli import main

main()
