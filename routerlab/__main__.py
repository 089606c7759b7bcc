import sys

from routerlab.cli import main

sys.exit(main())
