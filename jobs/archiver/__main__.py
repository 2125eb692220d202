"""``python -m jobs.archiver``: run the archiver process (see ``jobs.archiver.process``)."""

import sys

from jobs.archiver.process import main

sys.exit(main())
