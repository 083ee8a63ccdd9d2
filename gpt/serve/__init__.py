"""`tinygpt serve`: an OpenAI-compatible HTTP API and a chat page over a tinygpt model (issue 17).

engine.py: batched decoding (no HTTP, no third-party imports); prompts.py: chat messages -> the model's prompt;
app.py: the FastAPI routes and pydantic schemas (needs `pip install "tinygpt[serve]"`); page/: the chat page.
Only app.py imports fastapi, so `import gpt.serve.engine` works without the extra.
"""
