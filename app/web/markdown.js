// Markdown to DOM nodes without ever parsing HTML.
//
// marked's lexer turns the text into tokens; this module builds elements
// from those tokens with createElement and textContent. Raw HTML in a
// message is shown as text, and links keep only http, https and mailto
// addresses, so a memory or a model reply cannot inject markup or script.

import { lexer } from "./vendor/marked.esm.js";

const SAFE_LINK = /^(https?:|mailto:)/i;

function element(tag, children = [], text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const child of children) node.append(child);
  return node;
}

function inline(tokens = []) {
  return tokens.map(inlineToken);
}

function inlineToken(token) {
  switch (token.type) {
    case "strong":
      return element("strong", inline(token.tokens));
    case "em":
      return element("em", inline(token.tokens));
    case "del":
      return element("del", inline(token.tokens));
    case "codespan":
      return element("code", [], token.text);
    case "br":
      return element("br");
    case "link": {
      if (!SAFE_LINK.test(token.href)) return document.createTextNode(token.text);
      const link = element("a", inline(token.tokens));
      link.href = token.href;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      return link;
    }
    case "image":
      // Remote images are not loaded, so the alternative text is shown instead.
      return document.createTextNode(token.text ? `[image: ${token.text}]` : "[image]");
    case "text":
      return token.tokens ? element("span", inline(token.tokens)) : document.createTextNode(token.text);
    case "escape":
      return document.createTextNode(token.text);
    default:
      // html and anything unknown: the source text, as text.
      return document.createTextNode(token.raw ?? "");
  }
}

function listItem(item) {
  const li = element("li");
  if (item.task) {
    const box = element("input");
    box.type = "checkbox";
    box.checked = Boolean(item.checked);
    box.disabled = true;
    li.append(box, " ");
  }
  for (const token of item.tokens) {
    // Tight lists hold text tokens directly; loose ones hold paragraphs.
    li.append(token.type === "text" ? element("span", inline(token.tokens ?? [token])) : block(token));
  }
  return li;
}

function table(token) {
  const headRow = element(
    "tr",
    token.header.map((cell) => element("th", inline(cell.tokens))),
  );
  const rows = token.rows.map((row) => element("tr", row.map((cell) => element("td", inline(cell.tokens)))));
  return element("table", [element("thead", [headRow]), element("tbody", rows)]);
}

function block(token) {
  switch (token.type) {
    case "heading":
      // Message headings sit below the page's own h1 and h2.
      return element(`h${Math.min(6, token.depth + 2)}`, inline(token.tokens));
    case "paragraph":
      return element("p", inline(token.tokens));
    case "text":
      return element("p", inline(token.tokens ?? [token]));
    case "code": {
      const code = element("code", [], token.text);
      if (token.lang) code.dataset.language = token.lang;
      return element("pre", [code]);
    }
    case "blockquote":
      return element("blockquote", token.tokens.map(block));
    case "list": {
      const list = element(token.ordered ? "ol" : "ul", token.items.map(listItem));
      if (token.ordered && token.start !== "" && token.start !== 1) list.start = token.start;
      return list;
    }
    case "table":
      return table(token);
    case "hr":
      return element("hr");
    case "space":
      return document.createTextNode("");
    default:
      return element("p", [], token.raw ?? "");
  }
}

/** Render Markdown text into a document fragment. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  for (const token of lexer(text)) fragment.append(block(token));
  return fragment;
}
