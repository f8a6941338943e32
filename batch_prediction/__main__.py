import sys

from batch_prediction.cli import main

sys.exit(main())
