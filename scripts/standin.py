"""The OpenAI-compatible stand-in model server (coop/testing/standin.py), on loopback:

python -m scripts.standin --port 8000 --latency 0.5 --rate-429 0.1
OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=anything coop start "..."
"""

from coop.testing.standin import main

if __name__ == "__main__":
    main()
