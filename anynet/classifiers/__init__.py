"""The course's ``classifiers`` package: ``from anynet.classifiers.cnn import *`` ports ``cs231n.classifiers.cnn``."""
