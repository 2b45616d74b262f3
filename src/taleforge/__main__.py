import sys

from taleforge.cli import main

sys.exit(main())
