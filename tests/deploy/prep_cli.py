"""A command-line deployment preprocessor: python3 prep_cli.py IMAGES OUTPUT CONFIG PIPELINE (a pipelines.py name)."""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import pipelines

images, output, config, name = sys.argv[1:5]
paths = [Path(line) for line in Path(images).read_text().splitlines() if line.strip()]
np.save(output, getattr(pipelines, name)(paths, json.loads(Path(config).read_text())))
