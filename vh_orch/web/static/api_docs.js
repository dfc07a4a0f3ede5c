// /api/docs: swagger-ui over this server's OpenAPI document. A file of its own because the pages'
// Content-Security-Policy allows no inline script.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  validatorUrl: null,  // else the page asks a validator on another host about the document
});
