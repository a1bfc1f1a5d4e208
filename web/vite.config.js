import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// `vite build`: the demo page, into the directory the server embeds (committed; see
// check-embedded.sh). `vite build --mode test-pages`: the pages the browser tests open, into
// .test-dist/ (not committed). File names carry no hash: the server embeds them by name.
export default defineConfig(({ mode }) => {
  const testPages = mode === 'test-pages';
  return {
    plugins: [svelte({ configFile: false })],
    build: {
      outDir: testPages ? '.test-dist' : '../crates/headcount-server/demo-dist',
      emptyOutDir: true,
      reportCompressedSize: false,
      rolldownOptions: {
        input: testPages ? { seed: 'test-pages/seed.html' } : { demo: 'index.html' },
        output: {
          entryFileNames: 'assets/[name].js',
          chunkFileNames: 'assets/[name].js',
          assetFileNames: 'assets/[name][extname]',
          codeSplitting: false,
        },
      },
    },
  };
});
