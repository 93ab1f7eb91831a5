"""The Streamlit chat UI (trusted side): ``pmirs ui`` serves ``ui/app.py``; ``ui.launch`` starts it from code."""
