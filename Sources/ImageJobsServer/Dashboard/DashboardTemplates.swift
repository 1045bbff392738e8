import Mustache

/// The dashboard's pages (Mustache; `{{…}}` escapes HTML) and the two files they load, all
/// compiled into the binary: nothing is fetched from anywhere else.
enum DashboardTemplates {
    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for (name, text) in [("layout", layout), ("login", login), ("overview", overview), ("live", live), ("job", job), ("jobTable", jobTable), ("jobs", jobs), ("message", message), ("webhooks", webhooks), ("deliveryTable", deliveryTable), ("report", report), ("scheduling", scheduling), ("bulkRetry", bulkRetry), ("pausedItems", pausedItems), ("pauseForm", pauseForm)] {
            // The templates are constants of this file; one that does not parse is a bug the
            // dashboard's tests catch on their first page.
            try! library.register(text, named: name)
        }
        return library
    }()

    static let layout = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · ImageJobs</title>
        <link rel="stylesheet" href="/assets/dashboard.css">
        <script src="/assets/dashboard.js" defer></script>
        </head>
        <body>
        <header>
          <a class="brand" href="/">ImageJobs</a>
          {{#csrf}}
          <nav><a href="/">Overview</a> <a href="/jobs">Jobs</a> <a href="/conversations">Conversations</a> <a href="/batches">Batches</a>
            <a href="/workers">Workers</a> <a href="/scheduling">Scheduling</a> <a href="/webhooks">Webhooks</a></nav>
          <form method="post" action="/logout" class="signout">
            <input type="hidden" name="csrf" value="{{csrf}}">
            <button type="submit">Sign out</button>
          </form>
          {{/csrf}}
        </header>
        <main>
        {{{content}}}
        </main>
        </body>
        </html>
        """

    static let login = """
        <section class="login">
          <h1>Sign in</h1>
          <p>Paste an API key with the <code>admin</code> scope (<code>imagejobs api-keys create --scopes admin</code>).</p>
          {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
          <form method="post" action="/login">
            <label for="key">API key</label>
            <input id="key" name="key" type="password" autocomplete="current-password" required>
            <button type="submit">Sign in</button>
          </form>
        </section>
        """

    static let message = """
        <section>
          <h1>{{title}}</h1>
          <p>{{text}}</p>
          <p><a href="/">Back to the overview</a></p>
        </section>
        """

    static let overview = """
        <h1>Overview</h1>
        <div id="live" data-live="/dashboard/events">
        {{{liveHTML}}}
        </div>
        <section class="controls">
          <h2>Pause</h2>
          {{> pauseForm}}
        </section>
        """

    /// The part of the overview the live stream replaces once a second when it changes.
    static let live = """
        <p class="read-at">As of <time datetime="{{readAt}}">{{readAt}}</time></p>
        {{#hasPaused}}
        <section class="paused" id="paused">
          <h2>Paused</h2>
          <ul>
          {{> pausedItems}}
          </ul>
        </section>
        {{/hasPaused}}
        <section>
          <h2>Queue</h2>
          <table class="counts">
            <thead><tr><th>Priority</th><th>Queued</th><th>Held</th><th>Running</th><th>Next in line waiting</th></tr></thead>
            <tbody>
            {{#priorities}}
              <tr><td>{{priority}}</td><td class="n">{{queued}}</td><td class="n">{{held}}</td><td class="n">{{running}}</td><td>{{waiting}}</td></tr>
            {{/priorities}}
            </tbody>
          </table>
          <p class="note">Held: waiting for a run-at time, a cap or a rate limit. Jobs of a paused kind keep their place and count as queued.</p>
        </section>
        <section>
          <h2>Completed per minute, last hour</h2>
          <svg class="chart" viewBox="0 0 720 100" role="img" aria-label="{{chartLabel}}">
            {{#bars}}<rect x="{{x}}" y="{{y}}" width="10" height="{{height}}"><title>{{label}}</title></rect>{{/bars}}
          </svg>
        </section>
        {{#tables}}
        <section id="{{name}}">
          <h2>{{title}}</h2>
          {{> jobTable}}
        </section>
        {{/tables}}
        """

    static let job = """
        <h1>Job <code>{{id}}</code></h1>
        <div class="job" {{#live}}data-job-events="/v1/jobs/{{id}}/events" data-status="{{status}}"{{/live}}>
          <p><span class="status status-{{status}}" id="status">{{status}}</span>
             {{#position}}<span id="position">{{position}}</span>{{/position}}</p>
          {{#progress}}
          <p><progress id="progress" value="{{step}}" max="{{total}}"></progress> <span id="progress-text">{{text}}</span></p>
          {{/progress}}
          <table class="fields">
            <tr><th>Kind</th><td>{{kind}}</td></tr>
            <tr><th>Priority</th><td>{{priority}}</td></tr>
            <tr><th>Conversation</th><td><a href="/jobs?conversation={{conversation}}"><code>{{conversation}}</code></a></td></tr>
            {{#batch}}<tr><th>Batch</th><td><a href="/jobs?batch={{batch}}"><code>{{batch}}</code></a></td></tr>{{/batch}}
            <tr><th>Attempts</th><td>{{attempt}} (retries used {{retryCount}} of {{maxRetries}})</td></tr>
            {{#timeline}}<tr><th>{{label}}</th><td><time datetime="{{at}}">{{at}}</time></td></tr>{{/timeline}}
            {{#errorMessage}}<tr><th>Error</th><td class="error">{{errorMessage}}</td></tr>{{/errorMessage}}
          </table>
          {{#actions}}
          <div class="actions">
            {{#canCancel}}
            <form method="post" action="/jobs/{{id}}/cancel" class="inline">
              <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="cancel">Cancel</button>
            </form>
            {{/canCancel}}
            {{#canRetry}}
            <form method="post" action="/jobs/{{id}}/retry" class="inline">
              <input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" id="retry">Retry</button>
            </form>
            {{/canRetry}}
          </div>
          {{/actions}}
          {{#hasErrors}}
          <h2>Errors</h2>
          <ol class="attempts">{{#errors}}<li><time datetime="{{at}}">{{at}}</time> attempt {{attempt}}: {{message}}</li>{{/errors}}</ol>
          {{/hasErrors}}
          {{#deliveries}}
          <h2>Webhook deliveries</h2>
          {{> deliveryTable}}
          {{/deliveries}}
          {{#image}}
          <h2>Image</h2>
          <img id="image" src="/v1/jobs/{{id}}/image" alt="the job's image" width="{{width}}" height="{{height}}">
          {{/image}}
          <h2>Parameters</h2>
          <pre class="params">{{params}}</pre>
        </div>
        """

    static let jobs = """
        <h1>Jobs</h1>
        <form method="get" action="/jobs" class="filters">
          <label for="status">Status</label>
          <select id="status" name="status">
            {{#statuses}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/statuses}}
          </select>
          <label for="conversation">Conversation</label>
          <input id="conversation" name="conversation" value="{{conversation}}" placeholder="id" size="36">
          <label for="batch">Batch</label>
          <input id="batch" name="batch" value="{{batch}}" placeholder="id" size="36">
          <label for="kind">Kind</label>
          <input id="kind" name="kind" value="{{kind}}" placeholder="any" size="16">
          <label for="q">Parameters contain</label>
          <input id="q" name="q" value="{{search}}" placeholder="words of a prompt" size="24">
          <label for="until">Before</label>
          <input id="until" name="until" value="{{until}}" placeholder="2026-12-02T18:00:00Z" size="22">
          <button type="submit">Show</button>
        </form>
        <p class="note" id="order">{{order}}</p>
        {{#canRetryAll}}
        <form method="post" action="/jobs/retry" class="inline">
          <input type="hidden" name="csrf" value="{{csrf}}">
          <input type="hidden" name="conversation" value="{{conversation}}">
          <input type="hidden" name="batch" value="{{batch}}">
          <button type="submit" id="retry-all">Retry all in error…</button>
        </form>
        {{/canRetryAll}}
        {{#table}}{{> jobTable}}{{/table}}
        <p class="pages">{{#newest}}<a href="{{newest}}" id="newest">Newest</a>{{/newest}} {{#older}}<a href="{{older}}" id="older">Older</a>{{/older}}</p>
        """

    static let bulkRetry = """
        <h1>Retry jobs in error</h1>
        {{#none}}<p id="count">No jobs in error in {{scope}}.</p>{{/none}}
        {{^none}}
        <p id="count">{{countText}} jobs in error in {{scope}} will go back to the queue with a fresh retry budget.</p>
        <form method="post" action="/jobs/retry" class="inline">
          <input type="hidden" name="csrf" value="{{csrf}}">
          <input type="hidden" name="conversation" value="{{conversation}}">
          <input type="hidden" name="batch" value="{{batch}}">
          <input type="hidden" name="confirm" value="yes">
          <button type="submit" id="confirm-retry">Retry {{count}} jobs</button>
        </form>
        {{/none}}
        <p><a href="{{back}}">Back to the jobs in error</a></p>
        """

    /// A reporting view as a table (conversations, batches, workers), ids linked to their jobs.
    static let report = """
        <h1>{{title}}</h1>
        <p class="note">{{note}}</p>
        {{#hasRows}}
        <table class="report" id="report">
          <thead><tr>{{#columns}}<th>{{.}}</th>{{/columns}}</tr></thead>
          <tbody>
          {{#rows}}
            <tr>{{#cells}}<td>{{#link}}<a href="{{link}}"><code>{{text}}</code></a>{{/link}}{{^link}}{{text}}{{/link}}</td>{{/cells}}</tr>
          {{/rows}}
          </tbody>
        </table>
        {{/hasRows}}
        {{^hasRows}}<p class="empty">None.</p>{{/hasRows}}
        """

    static let scheduling = """
        <h1>Scheduling</h1>
        <table class="fields">
          <tr><th>Fair share</th><td id="fair-share">{{fairShare}}</td></tr>
          <tr><th>Turn</th><td>{{turn}}</td></tr>
        </table>
        <h2>Limits</h2>
        {{#hasLimits}}
        <table class="report" id="limits">
          <thead><tr><th>Scope</th><th>Per conversation</th><th>Rate</th><th>Weight</th></tr></thead>
          <tbody>{{#limits}}<tr><td>{{scope}}</td><td>{{perConversation}}</td><td>{{rate}}</td><td>{{weight}}</td></tr>{{/limits}}</tbody>
        </table>
        {{/hasLimits}}
        {{^hasLimits}}<p class="empty">None: no caps, no rate limits, equal weights.</p>{{/hasLimits}}
        <p class="note">Set them with <code>imagejobs limits set</code>; the narrowest scope wins (conversation, then kind, then the queue).</p>
        <h2>Pauses</h2>
        {{#hasPaused}}
        <ul id="paused">
        {{> pausedItems}}
        </ul>
        {{/hasPaused}}
        {{^hasPaused}}<p class="empty">Nothing is paused.</p>{{/hasPaused}}
        {{> pauseForm}}
        """

    /// The paused kinds, each with its Resume form (in a context that has `csrf`).
    static let pausedItems = """
        {{#paused}}
          <li><span class="kind">{{name}}</span>
            <form method="post" action="/resume" class="inline">
              <input type="hidden" name="csrf" value="{{csrf}}">
              <input type="hidden" name="kind" value="{{kind}}">
              <button type="submit" class="resume">Resume</button>
            </form></li>
        {{/paused}}
        """

    static let pauseForm = """
        <form method="post" action="/pause" class="inline">
          <input type="hidden" name="csrf" value="{{csrf}}">
          <label for="pause-kind">Kind</label>
          <input id="pause-kind" name="kind" placeholder="every kind">
          <button type="submit" id="pause">Pause</button>
        </form>
        """

    static let webhooks = """
        <h1>Webhook deliveries</h1>
        <p class="note">The newest {{count}}. Each is a job of kind <code>webhook.deliver</code>, retried with the queue's backoff until its receiver answers 2xx.</p>
        {{#table}}{{> deliveryTable}}{{/table}}
        """

    static let deliveryTable = """
        {{#hasRows}}
        <table class="jobs deliveries">
          <thead><tr><th>Delivery</th><th>Event</th><th>Host</th><th>Of</th><th>Status</th><th>Attempts</th><th>Last error</th><th>Created</th></tr></thead>
          <tbody>
          {{#rows}}
            <tr data-delivery="{{id}}"><td><a href="/jobs/{{id}}"><code>{{shortID}}</code></a></td><td>{{event}}</td><td>{{host}}</td>
              <td>{{#subjectLink}}<a href="{{subjectLink}}"><code>{{subjectShortID}}</code></a>{{/subjectLink}}</td>
              <td><span class="status status-{{status}}">{{status}}</span></td><td>{{attempts}}</td>
              <td class="error">{{lastError}}</td><td>{{createdAt}}</td></tr>
          {{/rows}}
          </tbody>
        </table>
        {{/hasRows}}
        {{^hasRows}}<p class="empty">None.</p>{{/hasRows}}
        """

    static let jobTable = """
        {{#hasJobs}}
        <table class="jobs">
          <thead><tr><th>Job</th><th>Kind</th><th>Priority</th><th>Status</th><th>{{timeLabel}}</th></tr></thead>
          <tbody>
          {{#jobs}}
            <tr data-job="{{id}}"><td><a href="/jobs/{{id}}"><code>{{shortID}}</code></a></td><td>{{kind}}</td><td>{{priority}}</td>
              <td><span class="status status-{{status}}">{{status}}</span>{{#progress}} {{step}}/{{total}}{{/progress}}</td><td>{{time}}</td></tr>
          {{/jobs}}
          </tbody>
        </table>
        {{/hasJobs}}
        {{^hasJobs}}<p class="empty">None.</p>{{/hasJobs}}
        """

    static let stylesheet = """
        :root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --bg: #fff; --accent: #2f5bd3; }
        @media (prefers-color-scheme: dark) { :root { --fg: #e4e7ec; --muted: #98a2b3; --line: #344054; --bg: #101828; --accent: #84a9ff; } }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
        header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.5rem; border-bottom: 1px solid var(--line); }
        header .brand { font-weight: 700; color: var(--fg); text-decoration: none; }
        header nav { flex: 1; }
        main { padding: 1rem 1.5rem 3rem; max-width: 72rem; }
        a { color: var(--accent); }
        h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
        table { border-collapse: collapse; }
        th, td { text-align: left; padding: .3rem .8rem .3rem 0; border-bottom: 1px solid var(--line); vertical-align: top; }
        td.n { text-align: right; font-variant-numeric: tabular-nums; }
        .note, .read-at, .empty { color: var(--muted); font-size: .9rem; }
        .status { display: inline-block; padding: 0 .45rem; border-radius: .6rem; font-size: .85rem; border: 1px solid var(--line); }
        .status-running { border-color: #2f5bd3; } .status-completed { border-color: #12b76a; }
        .status-error { border-color: #f04438; } .status-cancelled { border-color: #98a2b3; }
        .error { color: #d92d20; }
        form.inline { display: inline-flex; gap: .4rem; align-items: center; }
        input, button { font: inherit; padding: .25rem .6rem; }
        .login { max-width: 28rem; } .login form { display: grid; gap: .5rem; }
        .chart { width: 100%; max-width: 720px; height: 100px; border-bottom: 1px solid var(--line); }
        .chart rect { fill: var(--accent); }
        pre.params { background: rgba(127,127,127,.1); padding: .6rem; overflow-x: auto; }
        img#image { max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid var(--line); }
        form.filters { display: flex; flex-wrap: wrap; gap: .4rem .6rem; align-items: center; margin-bottom: .6rem; }
        .paused li { margin: .3rem 0; } .paused .kind { font-family: monospace; margin-right: .6rem; }
        """

    /// Live pages: the overview swaps in each `overview` event's HTML; a job's page follows
    /// the job's own event stream and reloads when its status changes.
    static let script = """
        "use strict";
        document.addEventListener("DOMContentLoaded", () => {
          const live = document.querySelector("[data-live]");
          if (live) {
            const source = new EventSource(live.dataset.live);
            source.addEventListener("overview", (event) => { live.innerHTML = event.data; });
          }
          const job = document.querySelector("[data-job-events]");
          if (job) {
            const source = new EventSource(job.dataset.jobEvents);
            source.addEventListener("job", (event) => {
              const state = JSON.parse(event.data);
              if (state.status !== job.dataset.status) { source.close(); window.location.reload(); return; }
              const progress = document.getElementById("progress");
              if (progress && state.progress) {
                progress.max = state.progress.total;
                progress.value = state.progress.step;
                document.getElementById("progress-text").textContent = `step ${state.progress.step} of ${state.progress.total}`;
              }
              const position = document.getElementById("position");
              if (position && state.position && state.position.position !== undefined) {
                position.textContent = `position ${state.position.position}`;
              }
            });
          }
        });
        """
}
