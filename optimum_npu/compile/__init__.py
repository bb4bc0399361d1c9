"""Graph capture, the artifact writer/reader and the compile pipeline's passes."""
