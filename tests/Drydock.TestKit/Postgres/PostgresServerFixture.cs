using Xunit;

namespace Drydock.TestKit.Postgres;

/// <summary>
/// One private PostgreSQL server per test collection (<c>[Collection]</c> + <c>ICollectionFixture</c>). Tests isolate
/// themselves with <see cref="CreateDatabaseAsync"/>: a fresh database each.
/// </summary>
public sealed class PostgresServerFixture : IAsyncLifetime
{
    private PostgresServer? _server;
    private int _databases;

    /// <summary>The running server.</summary>
    public PostgresServer Server => _server ?? throw new InvalidOperationException("The fixture is not initialized.");

    /// <summary>Creates a new, empty database with a unique name and returns its connection string.</summary>
    public Task<string> CreateDatabaseAsync(string prefix = "t", CancellationToken cancellationToken = default)
        => Server.CreateDatabaseAsync($"{prefix}_{Interlocked.Increment(ref _databases)}", cancellationToken);

    /// <inheritdoc/>
    public async ValueTask InitializeAsync() => _server = await PostgresServer.StartAsync();

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }
}
