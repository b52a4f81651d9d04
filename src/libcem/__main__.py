import sys

from libcem.cli import main

sys.exit(main())
