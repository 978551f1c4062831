// The playground's chat: one WebSocket to the session (the admin login authenticates it), the
// IDE's frames out, the runtime's chunks (PROTOCOL §3.2) drawn as they come. Everything the model
// or a user wrote goes into the page as text nodes (textContent), never as HTML.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("playground-config").textContent);
  const log = document.getElementById("chat-log");
  const thinking = document.getElementById("thinking");
  const connection = document.getElementById("connection");
  const currentAgent = document.getElementById("current-agent");
  const composer = document.getElementById("composer");
  const readOnly = new Set(config.read_only_tools);

  let socket = null;
  let bubble = null; // the assistant reply being streamed: {entry, text}
  let ownTurn = false; // this page sent the frame whose answer is arriving
  let retryDelay = 1000;
  const cards = new Map(); // call_id -> the tool call's entry

  // --- drawing --------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function button(label, id, onClick) {
    const b = el("button", "", label);
    b.type = "button";
    if (id) b.dataset.action = id;
    b.addEventListener("click", onClick);
    return b;
  }

  function append(entry) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(entry);
    if (atBottom) log.scrollTop = log.scrollHeight;
    return entry;
  }

  function entry(kind) {
    const li = el("li", "entry live " + kind);
    // Frames nobody asked for here: another client's turn, a decision made elsewhere.
    if (!ownTurn) li.classList.add("watched");
    return li;
  }

  function who(text) {
    return el("span", "who", ownTurn ? text : text + " · another client");
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  function argumentsView(toolName, args) {
    const box = el("div", "arguments");
    if (toolName === "write_file" && args && typeof args.path === "string") {
      box.appendChild(el("div", "path", args.path));
      box.appendChild(el("pre", "file-content", typeof args.content === "string" ? args.content : pretty(args.content)));
    } else if (toolName === "execute_command" && args && typeof args.command === "string") {
      box.appendChild(el("pre", "shell-command", args.command));
    } else {
      box.appendChild(el("pre", "json", pretty(args)));
    }
    return box;
  }

  function onAssistant(chunk) {
    if (chunk.metadata && chunk.metadata.decision) {
      // "The write_file call was rejected by staff:alice: ...": a line of its own.
      closeBubble();
      const li = append(entry("decision"));
      li.appendChild(el("span", "who", "decision"));
      li.appendChild(el("div", "text", chunk.content));
      return;
    }
    if (bubble === null) {
      const li = append(entry("role-assistant streaming"));
      li.appendChild(who("assistant · " + currentAgent.textContent));
      const text = el("div", "text");
      text.appendChild(document.createTextNode(""));
      li.appendChild(text);
      bubble = { entry: li, text: text.firstChild };
    }
    bubble.text.appendData(chunk.token !== null ? chunk.token : chunk.content || "");
    bubble.entry.dataset.chars = String(bubble.text.length);
    if (chunk.is_final) {
      bubble.entry.classList.remove("streaming");
      bubble.entry.classList.add("final");
      bubble = null;
    }
    keepBottom();
  }

  function keepBottom() {
    if (log.scrollHeight - log.scrollTop - log.clientHeight < 120) log.scrollTop = log.scrollHeight;
  }

  function closeBubble() {
    if (bubble !== null) {
      bubble.entry.classList.remove("streaming");
      bubble = null;
    }
  }

  function onSwitch(chunk) {
    closeBubble();
    const meta = chunk.metadata || {};
    const li = append(entry("switch"));
    li.appendChild(el("span", "who", "agent switch"));
    let line = chunk.content;
    if (meta.from_agent) line += " (from " + meta.from_agent + ")";
    if (meta.reason) line += ": " + meta.reason;
    if (meta.confidence) line += " [" + meta.confidence + "]";
    li.appendChild(el("div", "text", line));
    if (meta.to_agent) currentAgent.textContent = meta.to_agent;
  }

  function onError(chunk) {
    closeBubble();
    const li = append(entry("error"));
    li.appendChild(el("span", "who", "error"));
    li.appendChild(el("div", "text", chunk.error || chunk.content));
  }

  // --- tool calls: held ones are decided here, the others answered as the IDE would --------

  function onToolCall(chunk) {
    closeBubble();
    let card = cards.get(chunk.call_id);
    if (!card) {
      card = append(entry("call"));
      card.dataset.callId = chunk.call_id;
      cards.set(chunk.call_id, card);
    }
    card.replaceChildren();
    card.dataset.tool = chunk.tool_name;
    card.dataset.state = chunk.requires_approval ? "held" : "for-ide";
    const head = el("div", "call-head");
    head.appendChild(el("strong", "tool", chunk.tool_name));
    head.appendChild(el("code", "call-id", chunk.call_id));
    head.appendChild(el("span", "badge", chunk.requires_approval ? "waits for approval" : "for the IDE to run"));
    card.appendChild(head);
    const decision = chunk.metadata && chunk.metadata.decision;
    if (decision) card.appendChild(el("div", "decided", decision.summary));
    card.appendChild(argumentsView(chunk.tool_name, chunk.arguments));
    if (!config.can_act) return;
    if (chunk.requires_approval) {
      card.appendChild(decisionForm(chunk));
    } else {
      card.appendChild(resultForm(chunk));
    }
  }

  function decisionForm(chunk) {
    const form = el("div", "decide");
    const feedback = el("input", "feedback");
    feedback.type = "text";
    feedback.placeholder = "Feedback for the agent (optional)";
    const problem = el("div", "problem");
    const editor = el("div", "editor");
    editor.hidden = true;
    const isWrite = chunk.tool_name === "write_file" && typeof chunk.arguments.content === "string";
    const area = el("textarea", "edit-arguments");
    area.rows = isWrite ? 10 : 6;
    area.value = isWrite ? chunk.arguments.content : pretty(chunk.arguments);
    editor.appendChild(el("label", "", isWrite ? "File content of " + chunk.arguments.path : "Arguments (JSON)"));
    editor.appendChild(area);
    editor.appendChild(
      button("Release the edited call", "release", () => {
        let args;
        if (isWrite) {
          args = Object.assign({}, chunk.arguments, { content: area.value });
        } else {
          try {
            args = JSON.parse(area.value);
          } catch (err) {
            problem.textContent = "Not JSON: " + err.message;
            return;
          }
          if (args === null || typeof args !== "object" || Array.isArray(args)) {
            problem.textContent = "The arguments must be a JSON object.";
            return;
          }
        }
        decide(chunk, "edit", feedback.value, args, problem);
      })
    );
    const buttons = el("div", "buttons");
    buttons.appendChild(button("Approve", "approve", () => decide(chunk, "approve", feedback.value, null, problem)));
    buttons.appendChild(
      button("Edit…", "edit", () => {
        editor.hidden = !editor.hidden;
        if (!editor.hidden) area.focus();
      })
    );
    buttons.appendChild(button("Reject", "reject", () => decide(chunk, "reject", feedback.value, null, problem)));
    form.append(buttons, feedback, editor, problem);
    return form;
  }

  function decide(chunk, decision, feedback, args, problem) {
    problem.textContent = "";
    const frame = { type: "hitl_decision", call_id: chunk.call_id, decision: decision, feedback: feedback };
    if (args !== null) frame.modified_arguments = args;
    if (send(frame)) cards.get(chunk.call_id).dataset.state = "deciding";
  }

  function resultForm(chunk) {
    const form = el("div", "answer");
    const label = readOnly.has(chunk.tool_name)
      ? "Answer as the IDE: the tool's result"
      : "Answer as the IDE (an IDE connected to this session runs it itself)";
    form.appendChild(el("label", "", label));
    const area = el("textarea", "tool-result");
    area.rows = 4;
    form.appendChild(area);
    const asError = el("input");
    asError.type = "checkbox";
    const errorLabel = el("label", "as-error");
    errorLabel.append(asError, document.createTextNode(" it failed (send as the error)"));
    const buttons = el("div", "buttons");
    buttons.appendChild(
      button("Send result", "send-result", () => {
        const frame = { type: "tool_result", call_id: chunk.call_id };
        if (asError.checked) frame.error = area.value || "failed";
        else frame.result = area.value;
        if (send(frame)) cards.get(chunk.call_id).dataset.state = "answering";
      })
    );
    buttons.appendChild(errorLabel);
    form.appendChild(buttons);
    return form;
  }

  function settle(card, why) {
    if (card.dataset.state === "settled") return;
    card.dataset.state = "settled";
    for (const part of card.querySelectorAll(".decide, .answer")) part.remove();
    card.appendChild(el("div", "settled", why));
  }

  function settleHeld(why) {
    for (const card of cards.values()) {
      if (card.dataset.state === "held" || card.dataset.state === "deciding") settle(card, why);
    }
  }

  // Any later frame (but an error) means the session moved past the calls drawn so far: a
  // result arrived, or a new message superseded them. Released calls come back by call_id.
  function settleOlder(chunk) {
    for (const [callId, card] of cards) {
      if (callId === chunk.call_id) continue;
      const state = card.dataset.state;
      if (state === "held" || state === "deciding") settle(card, "Decided or superseded: the session moved on.");
      else if (state === "for-ide" || state === "answering") settle(card, "Answered: the session moved on.");
    }
  }

  // --- the socket -----------------------------------------------------------------------

  function endOfResponse() {
    ownTurn = false;
    thinking.hidden = true;
  }

  function onChunk(chunk) {
    thinking.hidden = true;
    const decision = chunk.metadata && chunk.metadata.decision;
    // A rejection's notice: the held card it settles says what was decided.
    if (decision && chunk.type !== "tool_call") settleHeld(decision.summary);
    if (chunk.type !== "error") settleOlder(chunk);
    if (chunk.type === "assistant_message") onAssistant(chunk);
    else if (chunk.type === "tool_call") onToolCall(chunk);
    else if (chunk.type === "agent_switched") onSwitch(chunk);
    else if (chunk.type === "error") onError(chunk);
    if (chunk.type === "error") {
      // A refused decision leaves its card as it was, to try again.
      for (const card of cards.values()) {
        if (card.dataset.state === "deciding") card.dataset.state = "held";
        if (card.dataset.state === "answering") card.dataset.state = "for-ide";
      }
    }
    if (chunk.is_final) endOfResponse();
  }

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
  }

  function send(frame) {
    if (socket === null || socket.readyState !== WebSocket.OPEN) {
      setConnection("closed", "not connected: not sent");
      return false;
    }
    ownTurn = true;
    if (frame.type !== "cancel") thinking.hidden = false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  const CLOSED = {
    4401: "refused: log in again (staff only)",
    4404: "this session does not exist any more",
    4503: "the runtime's channel layer is down; retrying",
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    setConnection("connecting", "connecting…");
    socket = new WebSocket(scheme + location.host + config.socket_path);
    socket.addEventListener("open", () => {
      retryDelay = 1000;
      setConnection("open", config.can_act ? "live" : "live (watching)");
    });
    socket.addEventListener("message", (event) => {
      let chunk;
      try {
        chunk = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      onChunk(chunk);
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      closeBubble();
      thinking.hidden = true;
      if (event.code === 4401 || event.code === 4404) {
        setConnection("closed", CLOSED[event.code]);
        return;
      }
      setConnection("closed", CLOSED[event.code] || "disconnected; reconnecting…");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 15000);
    });
  }

  if (composer) {
    const message = document.getElementById("message");
    const agent = document.getElementById("agent-choice");
    const submit = () => {
      const content = message.value;
      if (!content.trim()) return;
      const frame = { type: "user_message", content: content };
      if (agent.value) frame.agent_type = agent.value;
      if (!send(frame)) return;
      closeBubble();
      ownTurn = true;
      const li = append(entry("role-user"));
      li.appendChild(el("span", "who", "you"));
      li.appendChild(el("div", "text", content));
      message.value = "";
    };
    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      submit();
    });
    message.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        submit();
      }
    });
    document.getElementById("cancel-turn").addEventListener("click", () => send({ type: "cancel" }));
  }

  log.scrollTop = log.scrollHeight;
  connect();
})();
