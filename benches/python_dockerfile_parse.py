"""The Python side of `cargo bench --bench dockerfile`: the base images of each Dockerfile
given as an argument, through dockerfile-parse (https://pypi.org/project/dockerfile-parse/),
printed as one JSON document, so both tools do a whole process's work: start, read every
file, parse it, find its FROM images, print JSON."""
import json
import sys

from dockerfile_parse import DockerfileParser

out = []
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        parser = DockerfileParser(fileobj=f, env_replace=True)
        out.append({"file": path, "parent_images": parser.parent_images})
json.dump(out, sys.stdout, indent=2)
sys.stdout.write("\n")
