import sys

from vegalm.cli import main

sys.exit(main())
