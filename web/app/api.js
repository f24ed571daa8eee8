// HTTP side of the sandbox (openapi.yaml): a small fetch wrapper with the user's Bearer token.

/** An HTTP problem (RFC 9457) answered by the gateway. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code || "http_error";
    this.errors = problem?.errors || [];
    this.problem = problem;
  }
}

export class Api {
  /** @param {() => string|null} token The current user token. */
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, { title: "The gateway cannot be reached", detail: String(err) });
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { title: text.slice(0, 200) };
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  /** openapi.yaml mintDevToken (dev mode only). */
  devToken(userId, ttlSeconds) {
    return this.request("POST", "/v1/dev/token", { userId, ttlSeconds });
  }

  /** openapi.yaml listTools. */
  tools() {
    return this.request("GET", "/v1/tools");
  }

  /** openapi.yaml createGeneration (`cancelAfterSeconds`: the optional deadline). */
  createGeneration(toolId, inputs, cancelAfterSeconds) {
    const body = { toolId, inputs };
    if (typeof cancelAfterSeconds === "number") body.cancelAfterSeconds = cancelAfterSeconds;
    return this.request("POST", "/v1/generations", body);
  }

  /** openapi.yaml listGenerations. */
  generations(cursor, limit = 20) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor) query.set("cursor", cursor);
    return this.request("GET", `/v1/generations?${query}`);
  }

  /** openapi.yaml getGeneration. */
  generation(id) {
    return this.request("GET", `/v1/generations/${encodeURIComponent(id)}`);
  }

  /** openapi.yaml listGenerationWebhooks. */
  webhooks(id) {
    return this.request("GET", `/v1/generations/${encodeURIComponent(id)}/webhooks`);
  }

  /** openapi.yaml cancelGeneration. */
  cancel(id) {
    return this.request("POST", `/v1/generations/${encodeURIComponent(id)}/cancel`);
  }
}
