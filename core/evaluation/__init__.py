"""How good a translator's sentences are: fluency under the plain LM, and whether they name the scene and the
object (core.evaluation.captions)."""
