"""Speed of pre-training, measured as ``folk bench`` reports it: the step alone on random
tensors (``folk.benchmark.step``) and the input path, loader and step together
(``folk.benchmark.input_path``)."""
