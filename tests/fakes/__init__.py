"""Protocol-faithful fake Ollama and ComfyUI servers for tests."""
