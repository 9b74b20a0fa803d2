// The console is served by the host at /console/, same origin as the API.
// In development, `npm run dev` (or `npm run preview` after a build) serves
// it here and forwards the API and the WebSocket to a running host, named
// by EXHOST_URL (default http://127.0.0.1:8080).
import { defineConfig } from "vite";

const host = process.env.EXHOST_URL ?? "http://127.0.0.1:8080";
const proxy = {
  "/v1": { target: host, changeOrigin: true },
  "/admin": { target: host, changeOrigin: true },
  "/ws": { target: host.replace(/^http/, "ws"), ws: true, changeOrigin: true },
};

export default defineConfig({
  base: "/console/",
  // Everything the page needs is in dist/index.html and dist/assets/: the host
  // serves exactly those paths.
  publicDir: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  server: { proxy },
  preview: { proxy },
});
