"""`python main.py ...`: the `ds2f` command from a checkout (see ds2f_jax/main.py)."""
from ds2f_jax import main

if __name__ == '__main__':
  main.run()
