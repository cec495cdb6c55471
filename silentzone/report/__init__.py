"""Report products made from the shipped results: the README's generated numbers (`numbers`)."""
