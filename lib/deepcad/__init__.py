"""DeepCAD: the dataset's JSON format, a synthetic generator, CAD code text, meshes and conversations."""
