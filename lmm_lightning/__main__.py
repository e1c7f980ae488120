from lmm_lightning.cli import main

main()
