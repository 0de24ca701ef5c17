"""`python main.py ...` in a checkout: the `ds2f` command (ds2f_jax/main.py)."""
from ds2f_jax import main

if __name__ == '__main__':
  main.run()
