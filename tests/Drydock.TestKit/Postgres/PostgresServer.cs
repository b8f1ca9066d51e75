using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Drydock.TestKit.Postgres;

/// <summary>Options of a throwaway PostgreSQL server.</summary>
public sealed class PostgresServerOptions
{
    /// <summary>
    /// Keep PostgreSQL's durability settings (fsync, full page writes). Default false: tests run with fsync off,
    /// which still survives process kills and restarts (the OS keeps the WAL), just not power loss.
    /// </summary>
    public bool Durable { get; set; }

    /// <summary>max_connections of the server. Default 300 (several silos, each with a connection pool).</summary>
    public int MaxConnections { get; set; } = 300;

    /// <summary>Extra <c>-c name=value</c> settings.</summary>
    public IDictionary<string, string> Settings { get; } = new Dictionary<string, string>(StringComparer.Ordinal);
}

/// <summary>
/// A private PostgreSQL server in a temp directory: initdb + pg_ctl as the <c>postgres</c> user when running as root
/// (both refuse root), listening on a free loopback port and a Unix socket in the temp directory. Stopped by
/// pg_ctl, or by the postmaster's PID if that fails, and the directory is deleted.
/// </summary>
public sealed class PostgresServer : IAsyncDisposable
{
    private readonly PostgresServerOptions _options;
    private readonly string _bin;
    private bool _disposed;

    private PostgresServer(string root, string bin, int port, PostgresServerOptions options)
    {
        RootDirectory = root;
        _bin = bin;
        Port = port;
        _options = options;
    }

    /// <summary>The temp directory holding data, socket and log.</summary>
    public string RootDirectory { get; }

    /// <summary>The data directory.</summary>
    public string DataDirectory => Path.Combine(RootDirectory, "data");

    /// <summary>The Unix socket directory (also the Npgsql Host).</summary>
    public string SocketDirectory => Path.Combine(RootDirectory, "run");

    /// <summary>The server log.</summary>
    public string LogFile => Path.Combine(RootDirectory, "postgres.log");

    /// <summary>The TCP port on 127.0.0.1 (the socket file is named after it too).</summary>
    public int Port { get; }

    /// <summary>The postmaster's PID while it runs.</summary>
    public int? ProcessId
    {
        get
        {
            var pidFile = Path.Combine(DataDirectory, "postmaster.pid");
            if (!File.Exists(pidFile))
            {
                return null;
            }

            var first = File.ReadLines(pidFile).FirstOrDefault();
            return int.TryParse(first, NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid) ? pid : null;
        }
    }

    /// <summary>A connection string for a database over the Unix socket, as the superuser.</summary>
    public string ConnectionString(string database = "postgres")
        => $"Host={SocketDirectory};Port={Port};Username=postgres;Database={database};Pooling=true";

    /// <summary>Creates and starts a server.</summary>
    public static async Task<PostgresServer> StartAsync(PostgresServerOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new PostgresServerOptions();
        var bin = FindBinaries();
        var root = Directory.CreateTempSubdirectory("drydock-pg-").FullName;
        // The postgres user must reach the data and socket directories below it.
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        }

        var server = new PostgresServer(root, bin, FreePort(), options);
        try
        {
            await server.InitializeAsync(cancellationToken);
            await server.StartServerAsync(cancellationToken);
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>Creates a database and returns its connection string.</summary>
    public async Task<string> CreateDatabaseAsync(string name, CancellationToken cancellationToken = default)
    {
        await RunAsync(Path.Combine(_bin, "createdb"), ["-h", SocketDirectory, "-p", Port.ToString(CultureInfo.InvariantCulture), "-U", "postgres", name], asPostgres: false, cancellationToken);
        return ConnectionString(name);
    }

    /// <summary>Stops the server: <c>fast</c> (clean) or <c>immediate</c> (like a crash: recovery from WAL on start).</summary>
    public Task StopAsync(string mode = "fast", CancellationToken cancellationToken = default)
        => RunAsync(Path.Combine(_bin, "pg_ctl"), ["-D", DataDirectory, "-m", mode, "-w", "-t", "60", "stop"], asPostgres: true, cancellationToken);

    /// <summary>Starts the server again after <see cref="StopAsync"/>, on the same port and socket.</summary>
    public Task StartServerAsync(CancellationToken cancellationToken = default)
    {
        var settings = new StringBuilder();
        settings.Append(CultureInfo.InvariantCulture, $"-p {Port} -k {SocketDirectory} -c listen_addresses=127.0.0.1 -c max_connections={_options.MaxConnections}");
        if (!_options.Durable)
        {
            settings.Append(" -c fsync=off -c full_page_writes=off -c synchronous_commit=off");
        }

        foreach (var (name, value) in _options.Settings)
        {
            settings.Append(CultureInfo.InvariantCulture, $" -c {name}={value}");
        }

        return RunAsync(Path.Combine(_bin, "pg_ctl"), ["-D", DataDirectory, "-l", LogFile, "-w", "-t", "60", "-o", settings.ToString(), "start"], asPostgres: true, cancellationToken);
    }

    /// <summary>Stops (with <paramref name="mode"/>) and starts the server.</summary>
    public async Task RestartAsync(string mode = "fast", CancellationToken cancellationToken = default)
    {
        await StopAsync(mode, cancellationToken);
        await StartServerAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (ProcessId is { } pid)
        {
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                await StopAsync("fast", timeout.Token);
            }
            catch (Exception)
            {
                KillByPid(pid);
            }
        }

        try
        {
            Directory.Delete(RootDirectory, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp directory is harmless.
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }
    }

    private async Task InitializeAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(DataDirectory);
        Directory.CreateDirectory(SocketDirectory);
        if (IsRoot())
        {
            await RunAsync("chown", ["postgres:postgres", DataDirectory, SocketDirectory, RootDirectory], asPostgres: false, cancellationToken);
        }

        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(DataDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        await RunAsync(Path.Combine(_bin, "initdb"), ["-D", DataDirectory, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"], asPostgres: true, cancellationToken);
    }

    private static void KillByPid(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            process.Kill(entireProcessTree: false);
        }
        catch (ArgumentException)
        {
            // Gone already.
        }
        catch (InvalidOperationException)
        {
            // Gone already.
        }
    }

    private static async Task RunAsync(string fileName, IReadOnlyList<string> arguments, bool asPostgres, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (asPostgres && IsRoot())
        {
            start.FileName = "runuser";
            foreach (var a in (string[])["-u", "postgres", "--", fileName])
            {
                start.ArgumentList.Add(a);
            }
        }
        else
        {
            start.FileName = fileName;
        }

        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {fileName}.");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{Path.GetFileName(fileName)} {string.Join(' ', arguments)} exited with {process.ExitCode}: {await stderr}{await stdout}");
        }
    }

    private static bool IsRoot() => Environment.IsPrivilegedProcess;

    private static string FindBinaries()
    {
        var configured = Environment.GetEnvironmentVariable("DRYDOCK_PG_BIN");
        if (!string.IsNullOrEmpty(configured))
        {
            return configured;
        }

        const string Root = "/usr/lib/postgresql";
        if (Directory.Exists(Root))
        {
            var best = Directory.GetDirectories(Root)
                .Select(d => (Dir: d, Version: int.TryParse(Path.GetFileName(d), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : 0))
                .Where(x => File.Exists(Path.Combine(x.Dir, "bin", "initdb")))
                .OrderByDescending(x => x.Version)
                .FirstOrDefault();
            if (best.Dir is not null)
            {
                return Path.Combine(best.Dir, "bin");
            }
        }

        throw new InvalidOperationException("PostgreSQL server binaries not found: install postgresql-15 (test.sh does) or set DRYDOCK_PG_BIN.");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
