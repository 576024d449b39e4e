"""Text-to-image pieces used by `oplora.tasks.text_to_image`: data, pipeline loading and export."""
