import sys

from medfed.cli.main import main

sys.exit(main())
