"""Shadow: mirror a sample of live texts to a candidate model server and count where its answers differ."""
