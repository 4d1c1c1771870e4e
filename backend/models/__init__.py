"""Models: the linear model ml-training fits and serving scores, the registry modelops keeps, and
the point-in-time training set."""
