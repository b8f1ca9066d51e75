using System.Text.Json;
using System.Text.Json.Nodes;

namespace Drydock.Hypervisor.Qemu.Qmp;

/// <summary>
/// Typed wrappers of the QMP commands the driver uses (QEMU 7.2 QAPI: block-core.json, block-export.json,
/// transaction.json, job.json).
/// </summary>
public static class QmpCommands
{
    /// <summary><c>query-named-block-nodes</c> with <c>flat: true</c>.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>Every named node.</returns>
    public static async Task<IReadOnlyList<QemuBlockNode>> QueryNamedBlockNodesAsync(this QmpClient qmp, CancellationToken cancellationToken = default) =>
        QemuBlockNode.ParseList(await qmp.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, cancellationToken));

    /// <summary><c>x-debug-query-block-graph</c>.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The graph.</returns>
    public static async Task<QemuBlockGraph> QueryBlockGraphAsync(this QmpClient qmp, CancellationToken cancellationToken = default) =>
        QemuBlockGraph.Parse(await qmp.ExecuteAsync("x-debug-query-block-graph", cancellationToken: cancellationToken));

    /// <summary><c>query-block-exports</c>.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The exports.</returns>
    public static async Task<IReadOnlyList<QemuBlockExport>> QueryBlockExportsAsync(this QmpClient qmp, CancellationToken cancellationToken = default) =>
        QemuBlockExport.ParseList(await qmp.ExecuteAsync("query-block-exports", cancellationToken: cancellationToken));

    /// <summary><c>blockdev-add</c>.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="options">The node's options (<c>BlockdevOptions</c>).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public static Task BlockdevAddAsync(this QmpClient qmp, JsonObject options, CancellationToken cancellationToken = default) =>
        qmp.ExecuteAsync("blockdev-add", options, cancellationToken);

    /// <summary><c>blockdev-del</c>.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="nodeName">The node.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public static Task BlockdevDelAsync(this QmpClient qmp, string nodeName, CancellationToken cancellationToken = default) =>
        qmp.ExecuteAsync("blockdev-del", new JsonObject { ["node-name"] = nodeName }, cancellationToken);

    /// <summary>
    /// <c>blockdev-reopen</c> of several nodes at once (atomic). Every option of each node must be given: what is left
    /// out returns to its default.
    /// </summary>
    /// <param name="qmp">The client.</param>
    /// <param name="options">The nodes' complete new options.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public static Task BlockdevReopenAsync(this QmpClient qmp, IEnumerable<JsonObject> options, CancellationToken cancellationToken = default) =>
        qmp.ExecuteAsync("blockdev-reopen", new JsonObject { ["options"] = new JsonArray([.. options]) }, cancellationToken);

    /// <summary><c>transaction</c>: all actions or none.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="actions">Pairs of action type (e.g. <c>block-dirty-bitmap-add</c>) and data.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public static Task TransactionAsync(this QmpClient qmp, IEnumerable<(string Type, JsonObject Data)> actions, CancellationToken cancellationToken = default) =>
        qmp.ExecuteAsync("transaction", new JsonObject
        {
            ["actions"] = new JsonArray([.. actions.Select(a => (JsonNode)new JsonObject { ["type"] = a.Type, ["data"] = a.Data })]),
        }, cancellationToken);

    /// <summary>The data of a <c>block-dirty-bitmap-add</c> (command or transaction action).</summary>
    /// <param name="node">The node.</param>
    /// <param name="name">The bitmap.</param>
    /// <param name="persistent">Stored in the image.</param>
    /// <param name="disabled">Created not recording.</param>
    /// <param name="granularity">Bytes per bit, or null for QEMU's default (the cluster size).</param>
    /// <returns>The arguments.</returns>
    public static JsonObject BitmapAdd(string node, string name, bool persistent, bool disabled = false, long? granularity = null)
    {
        var data = new JsonObject { ["node"] = node, ["name"] = name, ["persistent"] = persistent, ["disabled"] = disabled };
        if (granularity is { } g)
        {
            data["granularity"] = g;
        }

        return data;
    }

    /// <summary>The data of a <c>block-dirty-bitmap-merge</c>. QEMU 7.2 crashes on an empty source list, so one is required.</summary>
    /// <param name="node">The node.</param>
    /// <param name="target">The bitmap merged into.</param>
    /// <param name="sources">Bitmaps of the same node to merge in (at least one).</param>
    /// <returns>The arguments.</returns>
    public static JsonObject BitmapMerge(string node, string target, IReadOnlyList<string> sources)
    {
        if (sources.Count == 0)
        {
            throw new ArgumentException("block-dirty-bitmap-merge needs at least one source bitmap.", nameof(sources));
        }

        return new JsonObject { ["node"] = node, ["target"] = target, ["bitmaps"] = new JsonArray([.. sources.Select(s => JsonValue.Create(s))]) };
    }

    /// <summary><c>block-dirty-bitmap-remove</c>.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="node">The node.</param>
    /// <param name="name">The bitmap.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public static Task RemoveBitmapAsync(this QmpClient qmp, string node, string name, CancellationToken cancellationToken = default) =>
        qmp.ExecuteAsync("block-dirty-bitmap-remove", new JsonObject { ["node"] = node, ["name"] = name }, cancellationToken);

    /// <summary><c>nbd-server-start</c> on a Unix socket; false when a server already runs (one per QEMU process).</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="socketPath">The socket path.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>True if this call started it.</returns>
    public static async Task<bool> StartNbdServerAsync(this QmpClient qmp, string socketPath, CancellationToken cancellationToken = default)
    {
        try
        {
            await qmp.ExecuteAsync("nbd-server-start", new JsonObject
            {
                ["addr"] = new JsonObject { ["type"] = "unix", ["data"] = new JsonObject { ["path"] = socketPath } },
            }, cancellationToken);
            return true;
        }
        catch (QmpException ex) when (ex.Description.Contains("already running", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
    }

    /// <summary><c>nbd-server-stop</c>: stops the NBD server and closes every NBD export it serves.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>False when no server was running.</returns>
    public static async Task<bool> StopNbdServerAsync(this QmpClient qmp, CancellationToken cancellationToken = default)
    {
        try
        {
            await qmp.ExecuteAsync("nbd-server-stop", cancellationToken: cancellationToken);
            return true;
        }
        catch (QmpException ex) when (ex.Description.Contains("not running", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
    }

    /// <summary><c>block-export-add</c> of an NBD export.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="id">The export id.</param>
    /// <param name="nodeName">The node to export.</param>
    /// <param name="exportName">The NBD export name.</param>
    /// <param name="writable">Allow writes.</param>
    /// <param name="bitmaps">Bitmaps to expose as <c>qemu:dirty-bitmap:NAME</c>, each (node, name).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public static Task AddNbdExportAsync(this QmpClient qmp, string id, string nodeName, string exportName, bool writable, IReadOnlyList<(string Node, string Name)>? bitmaps = null, CancellationToken cancellationToken = default)
    {
        var arguments = new JsonObject
        {
            ["type"] = "nbd",
            ["id"] = id,
            ["node-name"] = nodeName,
            ["name"] = exportName,
            ["writable"] = writable,
        };
        if (bitmaps is { Count: > 0 })
        {
            arguments["bitmaps"] = new JsonArray([.. bitmaps.Select(b => (JsonNode)new JsonObject { ["node"] = b.Node, ["name"] = b.Name })]);
        }

        return qmp.ExecuteAsync("block-export-add", arguments, cancellationToken);
    }

    /// <summary>
    /// <c>block-export-del</c> (mode <c>hard</c>: clients are disconnected) and waits for <c>BLOCK_EXPORT_DELETED</c>.
    /// </summary>
    /// <param name="qmp">The client.</param>
    /// <param name="id">The export id.</param>
    /// <param name="timeout">How long to wait for the event.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>False if no such export existed.</returns>
    public static async Task<bool> DeleteExportAsync(this QmpClient qmp, string id, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var events = qmp.SubscribeEvents(e => e.Name == "BLOCK_EXPORT_DELETED" && e.DataString("id") == id);
        try
        {
            await qmp.ExecuteAsync("block-export-del", new JsonObject { ["id"] = id, ["mode"] = "hard" }, cancellationToken);
        }
        catch (QmpException ex) when (ex.Description.Contains("not found", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        catch (QmpException ex) when (ex.Description.Contains("already shutting down", StringComparison.OrdinalIgnoreCase))
        {
            // A previous attempt started it; wait for the end below.
        }

        await events.WaitAsync(_ => true, timeout, cancellationToken);
        return true;
    }

    /// <summary>
    /// Runs <c>blockdev-create</c> as a job and waits for it to conclude; dismisses it; throws QEMU's job error if any.
    /// </summary>
    /// <param name="qmp">The client.</param>
    /// <param name="jobId">A unique job id.</param>
    /// <param name="options">The creation options (<c>BlockdevCreateOptions</c>).</param>
    /// <param name="timeout">How long the job may take.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>A task.</returns>
    /// <exception cref="QmpException">The job failed (<see cref="QmpException.Description"/> is QEMU's job error).</exception>
    public static async Task CreateImageAsync(this QmpClient qmp, string jobId, JsonObject options, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var events = qmp.SubscribeEvents(e => e.Name == "JOB_STATUS_CHANGE" && e.DataString("id") == jobId);
        await qmp.ExecuteAsync("blockdev-create", new JsonObject { ["job-id"] = jobId, ["options"] = options }, cancellationToken);
        await events.WaitAsync(e => e.DataString("status") is "concluded" or "null", timeout, cancellationToken);
        string? error = null;
        foreach (var job in (await qmp.ExecuteAsync("query-jobs", cancellationToken: cancellationToken)).EnumerateArray())
        {
            if (job.GetProperty("id").GetString() == jobId)
            {
                error = job.TryGetProperty("error", out var e) ? e.GetString() : null;
            }
        }

        await qmp.ExecuteAsync("job-dismiss", new JsonObject { ["id"] = jobId }, cancellationToken);
        if (error is not null)
        {
            throw new QmpException("blockdev-create", "JobError", error, qmp.Endpoint);
        }
    }

    /// <summary>
    /// Dismisses a job once it has concluded (waiting for that up to <paramref name="timeout"/>); does nothing when no
    /// such job exists. For clean-up paths: a job left concluded keeps its id taken.
    /// </summary>
    /// <param name="qmp">The client.</param>
    /// <param name="jobId">The job id.</param>
    /// <param name="timeout">How long to wait for it to conclude.</param>
    /// <param name="timeProvider">The clock for waiting.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>True if a job was dismissed.</returns>
    public static async Task<bool> DismissJobAsync(this QmpClient qmp, string jobId, TimeSpan timeout, TimeProvider timeProvider, CancellationToken cancellationToken = default)
    {
        var deadline = timeProvider.GetUtcNow() + timeout;
        while (true)
        {
            string? status = null;
            foreach (var job in (await qmp.ExecuteAsync("query-jobs", cancellationToken: cancellationToken)).EnumerateArray())
            {
                if (job.GetProperty("id").GetString() == jobId)
                {
                    status = job.GetProperty("status").GetString();
                }
            }

            if (status is null)
            {
                return false;
            }

            if (status == "concluded")
            {
                await qmp.ExecuteAsync("job-dismiss", new JsonObject { ["id"] = jobId }, cancellationToken);
                return true;
            }

            if (timeProvider.GetUtcNow() > deadline)
            {
                throw new TimeoutException($"Job '{jobId}' on {qmp.Endpoint} is still {status} after {timeout.TotalSeconds:0.#} s.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(10), timeProvider, cancellationToken);
        }
    }

    /// <summary><c>block_resize</c> of a node.</summary>
    /// <param name="qmp">The client.</param>
    /// <param name="nodeName">The node.</param>
    /// <param name="size">The new size in bytes.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public static Task ResizeAsync(this QmpClient qmp, string nodeName, ulong size, CancellationToken cancellationToken = default) =>
        qmp.ExecuteAsync("block_resize", new JsonObject { ["node-name"] = nodeName, ["size"] = size }, cancellationToken);

    /// <summary>A string member of a JSON reply, or null.</summary>
    /// <param name="element">The object.</param>
    /// <param name="name">The member.</param>
    /// <returns>The string.</returns>
    internal static string? StringOf(JsonElement element, string name) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
