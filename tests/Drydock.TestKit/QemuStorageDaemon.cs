using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Drydock.TestKit;

/// <summary>A dirty bitmap as QSD reports it (<c>query-named-block-nodes</c>).</summary>
/// <param name="Name">Bitmap name.</param>
/// <param name="Count">Dirty bytes.</param>
/// <param name="Granularity">Bytes per bit.</param>
/// <param name="Recording">Whether it records writes (enabled).</param>
/// <param name="Persistent">Whether it is stored in the qcow2 file.</param>
/// <param name="Busy">Whether an operation (e.g. an export) holds it.</param>
public sealed record QsdBitmap(string Name, long Count, long Granularity, bool Recording, bool Persistent, bool Busy);

/// <summary>
/// qemu-storage-daemon with only a QMP monitor on a Unix socket in its private directory; block nodes, dirty
/// bitmaps, the NBD server and exports are added over QMP (<see cref="Qmp"/>) by the helpers here or by the
/// test. Stopped by process group on dispose. Start one per test, or share one through
/// <see cref="QemuStorageDaemonFixture"/> and give every test its own node, bitmap and export names.
/// </summary>
public sealed class QemuStorageDaemon : IAsyncDisposable
{
    private readonly TestDirectory _directory;

    private QemuStorageDaemon(TestDirectory directory, ManagedProcess process, QmpClient qmp)
    {
        _directory = directory;
        Process = process;
        Qmp = qmp;
    }

    /// <summary>The QMP connection (the daemon's only monitor).</summary>
    public QmpClient Qmp { get; }

    /// <summary>The qemu-storage-daemon process.</summary>
    public ManagedProcess Process { get; }

    /// <summary>The private directory (QMP socket, pid file, NBD socket).</summary>
    public string DirectoryPath => _directory.Path;

    /// <summary>The NBD server's Unix socket once <see cref="StartNbdServerAsync"/> ran with Unix.</summary>
    public string? NbdSocketPath { get; private set; }

    /// <summary>The NBD server's TCP port on 127.0.0.1 once <see cref="StartNbdServerAsync"/> ran with TCP.</summary>
    public int? NbdPort { get; private set; }

    /// <summary>Starts the daemon and connects QMP.</summary>
    /// <param name="extraArguments">More command-line arguments (e.g. <c>--blockdev …</c>).</param>
    /// <param name="startTimeout">Readiness timeout; default 30 s.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <exception cref="ToolNotFoundException">Not installed (Debian package qemu-system-common).</exception>
    /// <exception cref="ServiceStartException">It exited or did not become ready in time.</exception>
    public static async Task<QemuStorageDaemon> StartAsync(IReadOnlyList<string>? extraArguments = null, TimeSpan? startTimeout = null, CancellationToken cancellationToken = default)
    {
        Tool.Find("qemu-storage-daemon");
        var timeout = startTimeout ?? Readiness.DefaultTimeout;
        var directory = TestDirectory.Create("qsd");
        ManagedProcess? process = null;
        try
        {
            var qmpSocket = directory.SocketPath("qmp.sock");
            var pidFile = directory.File("qsd.pid");
            process = ManagedProcess.Start("qemu-storage-daemon", [
                "--chardev", $"socket,id=qmp0,path={QemuNbdServer.EscapeOption(qmpSocket)},server=on,wait=off",
                "--monitor", "chardev=qmp0",
                "--pidfile", pidFile,
                .. extraArguments ?? [],
            ]);
            await Readiness.WaitForPidFileAsync(process, pidFile, timeout, cancellationToken);
            using var connectTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            connectTimeout.CancelAfter(timeout);
            var qmp = await QmpClient.ConnectAsync(qmpSocket, connectTimeout.Token);
            return new QemuStorageDaemon(directory, process, qmp);
        }
        catch
        {
            if (process is not null)
            {
                await process.DisposeAsync();
            }

            directory.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens an image as a block node: a <c>file</c> node <c>NODE-file</c> under a format node
    /// <paramref name="nodeName"/> (<c>blockdev-add</c>).
    /// </summary>
    public async Task AddImageNodeAsync(string imagePath, string nodeName, string format = ImageFormat.Qcow2, bool readOnly = false, CancellationToken cancellationToken = default)
    {
        await Qmp.ExecuteAsync("blockdev-add", new JsonObject
        {
            ["driver"] = format,
            ["node-name"] = nodeName,
            ["read-only"] = readOnly,
            ["file"] = new JsonObject
            {
                ["driver"] = "file",
                ["node-name"] = nodeName + "-file",
                ["filename"] = imagePath,
                ["read-only"] = readOnly,
            },
        }, cancellationToken);
    }

    /// <summary>
    /// Closes a node added by <see cref="AddImageNodeAsync"/>, writing persistent bitmaps back. Its file node,
    /// created with it, goes with it.
    /// </summary>
    public async Task RemoveImageNodeAsync(string nodeName, CancellationToken cancellationToken = default) =>
        await Qmp.ExecuteAsync("blockdev-del", new JsonObject { ["node-name"] = nodeName }, cancellationToken);

    /// <summary><c>block-dirty-bitmap-add</c>.</summary>
    public async Task AddBitmapAsync(string nodeName, string bitmapName, bool persistent = true, long? granularity = null, bool disabled = false, CancellationToken cancellationToken = default)
    {
        var arguments = new JsonObject { ["node"] = nodeName, ["name"] = bitmapName, ["persistent"] = persistent, ["disabled"] = disabled };
        if (granularity is { } g)
        {
            arguments["granularity"] = g;
        }

        await Qmp.ExecuteAsync("block-dirty-bitmap-add", arguments, cancellationToken);
    }

    /// <summary><c>block-dirty-bitmap-remove</c>.</summary>
    public async Task RemoveBitmapAsync(string nodeName, string bitmapName, CancellationToken cancellationToken = default) =>
        await Qmp.ExecuteAsync("block-dirty-bitmap-remove", new JsonObject { ["node"] = nodeName, ["name"] = bitmapName }, cancellationToken);

    /// <summary><c>block-dirty-bitmap-disable</c> / <c>-enable</c>.</summary>
    public async Task SetBitmapEnabledAsync(string nodeName, string bitmapName, bool enabled, CancellationToken cancellationToken = default) =>
        await Qmp.ExecuteAsync(enabled ? "block-dirty-bitmap-enable" : "block-dirty-bitmap-disable", new JsonObject { ["node"] = nodeName, ["name"] = bitmapName }, cancellationToken);

    /// <summary>The dirty bitmaps of a node (<c>query-named-block-nodes</c>).</summary>
    public async Task<IReadOnlyList<QsdBitmap>> GetBitmapsAsync(string nodeName, CancellationToken cancellationToken = default)
    {
        var nodes = await Qmp.ExecuteAsync("query-named-block-nodes", new JsonObject { ["flat"] = true }, cancellationToken);
        foreach (var node in nodes.EnumerateArray())
        {
            if (node.GetProperty("node-name").GetString() != nodeName)
            {
                continue;
            }

            if (!node.TryGetProperty("dirty-bitmaps", out var bitmaps))
            {
                return [];
            }

            return [.. bitmaps.EnumerateArray().Select(b => new QsdBitmap(
                b.GetProperty("name").GetString() ?? string.Empty,
                b.GetProperty("count").GetInt64(),
                b.GetProperty("granularity").GetInt64(),
                b.GetProperty("recording").GetBoolean(),
                b.GetProperty("persistent").GetBoolean(),
                b.GetProperty("busy").GetBoolean()))];
        }

        throw new InvalidOperationException($"No block node named '{nodeName}'.");
    }

    /// <summary>
    /// Starts the daemon's NBD server (<c>nbd-server-start</c>) on a Unix socket in the private directory or on
    /// a free 127.0.0.1 port, optionally with TLS from a server creds directory (see <see cref="TestPki"/>).
    /// One NBD server per daemon.
    /// </summary>
    public async Task StartNbdServerAsync(ServerTransport transport = ServerTransport.Unix, string? tlsCredentialsDirectory = null, CancellationToken cancellationToken = default)
    {
        if (NbdSocketPath is not null || NbdPort is not null)
        {
            throw new InvalidOperationException("The NBD server is already running.");
        }

        var arguments = new JsonObject();
        if (tlsCredentialsDirectory is not null)
        {
            await Qmp.ExecuteAsync("object-add", new JsonObject
            {
                ["qom-type"] = "tls-creds-x509",
                ["id"] = "tk-tls0",
                ["dir"] = tlsCredentialsDirectory,
                ["endpoint"] = "server",
                ["verify-peer"] = true,
            }, cancellationToken);
            arguments["tls-creds"] = "tk-tls0";
        }

        if (transport == ServerTransport.Unix)
        {
            var socketPath = _directory.SocketPath("nbd.sock");
            arguments["addr"] = new JsonObject { ["type"] = "unix", ["data"] = new JsonObject { ["path"] = socketPath } };
            await Qmp.ExecuteAsync("nbd-server-start", arguments, cancellationToken);
            NbdSocketPath = socketPath;
            return;
        }

        for (var attempt = 1; ; attempt++)
        {
            var port = Readiness.FreeTcpPort();
            arguments["addr"] = new JsonObject
            {
                ["type"] = "inet",
                ["data"] = new JsonObject { ["host"] = "127.0.0.1", ["port"] = port.ToString(CultureInfo.InvariantCulture) },
            };
            try
            {
                await Qmp.ExecuteAsync("nbd-server-start", arguments, cancellationToken);
                NbdPort = port;
                return;
            }
            catch (QmpException ex) when (attempt < 5 && Readiness.IsAddressInUse(ex.Description))
            {
                // Another test took the port between our probe and QEMU's bind.
            }
        }
    }

    /// <summary>Stops the NBD server (<c>nbd-server-stop</c>), which also removes its exports.</summary>
    public async Task StopNbdServerAsync(CancellationToken cancellationToken = default)
    {
        await Qmp.ExecuteAsync("nbd-server-stop", cancellationToken: cancellationToken);
        NbdSocketPath = null;
        NbdPort = null;
    }

    /// <summary>
    /// Exports a node over NBD (<c>block-export-add</c>) and returns the export's URI.
    /// </summary>
    /// <param name="exportId">The export's QMP id (for <see cref="RemoveNbdExportAsync"/>).</param>
    /// <param name="nodeName">The node to export.</param>
    /// <param name="exportName">The NBD export name.</param>
    /// <param name="writable">Allow writes.</param>
    /// <param name="bitmaps">Bitmaps of the node to expose as <c>qemu:dirty-bitmap:NAME</c>.</param>
    /// <param name="allocationDepth">Expose <c>qemu:allocation-depth</c>.</param>
    /// <param name="cancellationToken">Cancels the command.</param>
    /// <returns>The plain NBD URI of the export.</returns>
    public async Task<string> AddNbdExportAsync(
        string exportId,
        string nodeName,
        string exportName,
        bool writable = false,
        IReadOnlyList<string>? bitmaps = null,
        bool allocationDepth = false,
        CancellationToken cancellationToken = default)
    {
        var arguments = new JsonObject
        {
            ["type"] = "nbd",
            ["id"] = exportId,
            ["node-name"] = nodeName,
            ["name"] = exportName,
            ["writable"] = writable,
        };
        if (bitmaps is { Count: > 0 })
        {
            arguments["bitmaps"] = new JsonArray([.. bitmaps.Select(b => JsonValue.Create(b))]);
        }

        if (allocationDepth)
        {
            arguments["allocation-depth"] = true;
        }

        await Qmp.ExecuteAsync("block-export-add", arguments, cancellationToken);
        return ExportUri(exportName);
    }

    /// <summary>Removes an export (<c>block-export-del</c>) and waits for its <c>BLOCK_EXPORT_DELETED</c> event.</summary>
    public async Task RemoveNbdExportAsync(string exportId, CancellationToken cancellationToken = default)
    {
        await Qmp.ExecuteAsync("block-export-del", new JsonObject { ["id"] = exportId }, cancellationToken);
        await Qmp.WaitForEventAsync(
            "BLOCK_EXPORT_DELETED",
            e => e.TryGetProperty("data", out var data) && data.TryGetProperty("id", out var id) && id.GetString() == exportId,
            cancellationToken: cancellationToken);
    }

    /// <summary>The plain NBD URI of an export on this daemon's NBD server.</summary>
    public string ExportUri(string exportName) => NbdSocketPath is not null
        ? NbdUriText.ForUnix(NbdSocketPath, exportName)
        : NbdPort is { } port
            ? NbdUriText.ForTcp("127.0.0.1", port, exportName)
            : throw new InvalidOperationException("The NBD server is not running: call StartNbdServerAsync first.");

    /// <summary>The TLS URI of an export, with the client's certificates directory.</summary>
    public string ExportTlsUri(string exportName, string clientCertificatesDirectory) => NbdSocketPath is not null
        ? NbdUriText.ForUnix(NbdSocketPath, exportName, clientCertificatesDirectory)
        : NbdPort is { } port
            ? NbdUriText.ForTcp("127.0.0.1", port, exportName, clientCertificatesDirectory)
            : throw new InvalidOperationException("The NBD server is not running: call StartNbdServerAsync first.");

    /// <summary>
    /// Writes <paramref name="length"/> bytes of <paramref name="pattern"/> at <paramref name="offset"/>
    /// through a writable export, as a guest would (<c>qemu-io</c> as an NBD client), so that enabled
    /// bitmaps on the node record it.
    /// </summary>
    public Task<ProcessResult> WriteThroughExportAsync(string exportName, long offset, long length, byte pattern, CancellationToken cancellationToken = default) =>
        NbdTools.QemuIoAsync(ExportUri(exportName), ImageFormat.Raw,
            [string.Create(CultureInfo.InvariantCulture, $"write -P 0x{pattern:x2} {offset} {length}")], cancellationToken: cancellationToken);

    /// <summary>Runs any QMP command (shorthand for <c>Qmp.ExecuteAsync</c>).</summary>
    public Task<JsonElement> ExecuteAsync(string command, JsonObject? arguments = null, CancellationToken cancellationToken = default) =>
        Qmp.ExecuteAsync(command, arguments, cancellationToken);

    /// <summary>Closes QMP, stops the daemon (process group) and deletes its directory.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await Qmp.DisposeAsync();
            await Process.DisposeAsync();
        }
        finally
        {
            _directory.Dispose();
        }
    }
}

/// <summary>
/// One qemu-storage-daemon shared by a test collection (<c>ICollectionFixture&lt;QemuStorageDaemonFixture&gt;</c>),
/// with its NBD server on a Unix socket. Tests share it, so each must use its own node, bitmap and export names
/// (e.g. from <see cref="UniqueName"/>) and must not depend on what others did.
/// </summary>
public sealed class QemuStorageDaemonFixture : Xunit.IAsyncLifetime
{
    private QemuStorageDaemon? _daemon;
    private long _counter;

    /// <summary>The shared daemon.</summary>
    public QemuStorageDaemon Daemon => _daemon ?? throw new InvalidOperationException("The fixture is not initialised.");

    /// <summary>A name unique within this daemon, e.g. for a node or export: <c>PREFIX-N</c>.</summary>
    public string UniqueName(string prefix) => prefix + "-" + Interlocked.Increment(ref _counter).ToString(CultureInfo.InvariantCulture);

    /// <inheritdoc/>
    public async ValueTask InitializeAsync()
    {
        _daemon = await QemuStorageDaemon.StartAsync();
        await _daemon.StartNbdServerAsync(ServerTransport.Unix);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (_daemon is not null)
        {
            await _daemon.DisposeAsync();
        }
    }
}
