"""CAD code as a token language: the tokenizer and grammar-constrained decoding for CAD vision-language models."""
