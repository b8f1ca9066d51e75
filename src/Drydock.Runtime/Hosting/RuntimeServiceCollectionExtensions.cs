using Drydock.Runtime.Client;
using Drydock.Runtime.PostgreSql;
using Drydock.Runtime.Sqlite;
using Drydock.Runtime.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;

namespace Drydock.Runtime.Hosting;

/// <summary>Registers the runtime in a service collection (the silo host is the composition root).</summary>
public static class RuntimeServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="GrainSilo"/>, <see cref="GrainClient"/>, a <see cref="MessageTypeRegistry"/> and the options.
    /// Add a store (<see cref="AddDrydockRuntimePostgres"/> or <see cref="AddDrydockRuntimeSqlite"/>), handlers
    /// (<see cref="AddGrainHandler{THandler}"/>), executors (<see cref="AddEffectExecutor{TExecutor}"/>) and logging.
    /// The host migrates the store and starts the silo.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Sets the silo options; defaults are documented on <see cref="GrainRuntimeOptions"/>.</param>
    /// <param name="registerMessages">Registers the message and payload types of the grains.</param>
    public static IServiceCollection AddDrydockRuntime(this IServiceCollection services, Action<GrainRuntimeOptions>? configure = null, Action<MessageTypeRegistry>? registerMessages = null)
    {
        var options = new GrainRuntimeOptions();
        configure?.Invoke(options);
        options.Validate();
        var messages = new MessageTypeRegistry();
        registerMessages?.Invoke(messages);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(options);
        services.TryAddSingleton(messages);
        services.TryAddSingleton(sp => new GrainSilo(
            sp.GetRequiredService<IRuntimeStore>(),
            sp.GetServices<IGrainHandler>(),
            sp.GetServices<IEffectExecutor>(),
            sp.GetRequiredService<MessageTypeRegistry>(),
            sp.GetRequiredService<GrainRuntimeOptions>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<GrainSilo>>()));
        services.TryAddSingleton(sp => new GrainClient(
            sp.GetRequiredService<IRuntimeStore>(),
            sp.GetRequiredService<MessageTypeRegistry>(),
            sp.GetRequiredService<TimeProvider>()));
        return services;
    }

    /// <summary>Uses PostgreSQL (cluster mode).</summary>
    public static IServiceCollection AddDrydockRuntimePostgres(this IServiceCollection services, Action<PostgresRuntimeStoreOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var options = new PostgresRuntimeStoreOptions();
        configure(options);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<IRuntimeStore>(sp => new PostgresRuntimeStore(options, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<PostgresRuntimeStore>>()));
        return services;
    }

    /// <summary>Uses SQLite (embedded mode: one process runs every role).</summary>
    public static IServiceCollection AddDrydockRuntimeSqlite(this IServiceCollection services, Action<SqliteRuntimeStoreOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var options = new SqliteRuntimeStoreOptions();
        configure(options);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<IRuntimeStore>(sp => new SqliteRuntimeStore(options, sp.GetRequiredService<TimeProvider>()));
        return services;
    }

    /// <summary>Adds a grain handler (controller role).</summary>
    public static IServiceCollection AddGrainHandler<THandler>(this IServiceCollection services)
        where THandler : class, IGrainHandler
    {
        services.AddSingleton<IGrainHandler, THandler>();
        return services;
    }

    /// <summary>Adds an effect executor (worker role).</summary>
    public static IServiceCollection AddEffectExecutor<TExecutor>(this IServiceCollection services)
        where TExecutor : class, IEffectExecutor
    {
        services.AddSingleton<IEffectExecutor, TExecutor>();
        return services;
    }
}
