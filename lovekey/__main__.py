import sys

from lovekey.cli import main

sys.exit(main())
