from vh_orch.cli import main

main()
