namespace Drydock.Runtime;

/// <summary>Base of every exception the grain runtime throws on purpose.</summary>
public class GrainRuntimeException : Exception
{
    /// <summary>Creates the exception with a message.</summary>
    public GrainRuntimeException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the exception that caused it.</summary>
    public GrainRuntimeException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>A message, effect or state type name is not registered in this process.</summary>
public sealed class UnknownGrainTypeException(string typeName, string what)
    : GrainRuntimeException($"No {what} type is registered under the name '{typeName}'.")
{
    /// <summary>The stored type name that is not registered.</summary>
    public string TypeName { get; } = typeName;
}

/// <summary>A stored row has a version newer than this binary understands, or an older one without an upgrade.</summary>
public sealed class GrainSchemaVersionException(string typeName, int storedVersion, int knownVersion)
    : GrainRuntimeException($"'{typeName}' is stored at version {storedVersion}; this binary writes version {knownVersion} and has no upgrade for it.")
{
    /// <summary>The type name of the row.</summary>
    public string TypeName { get; } = typeName;

    /// <summary>The version found in the store.</summary>
    public int StoredVersion { get; } = storedVersion;

    /// <summary>The version this binary writes.</summary>
    public int KnownVersion { get; } = knownVersion;
}

/// <summary>The database schema is newer than the migrations this binary knows: an older silo must not write to it.</summary>
public sealed class RuntimeSchemaTooNewException(int databaseVersion, int knownVersion)
    : GrainRuntimeException($"The runtime schema is at version {databaseVersion}; this binary knows up to {knownVersion}. Upgrade the binary.")
{
    /// <summary>The version recorded in the database.</summary>
    public int DatabaseVersion { get; } = databaseVersion;

    /// <summary>The latest version this binary can migrate to.</summary>
    public int KnownVersion { get; } = knownVersion;
}

/// <summary>A request/response call got no reply within its timeout. The request may still be processed later.</summary>
public sealed class GrainCallTimeoutException(GrainId target, string requestId, TimeSpan timeout)
    : GrainRuntimeException($"No reply from {target} to request {requestId} within {timeout}.")
{
    /// <summary>The grain that was called.</summary>
    public GrainId Target { get; } = target;

    /// <summary>The id of the request.</summary>
    public string RequestId { get; } = requestId;
}

/// <summary>A request/response call was answered with an error: the handler failed on it until it was dead-lettered.</summary>
public sealed class GrainCallFailedException(GrainId target, string requestId, string error)
    : GrainRuntimeException($"{target} failed request {requestId}: {error}")
{
    /// <summary>The grain that was called.</summary>
    public GrainId Target { get; } = target;

    /// <summary>The id of the request.</summary>
    public string RequestId { get; } = requestId;

    /// <summary>The error recorded by the runtime.</summary>
    public string Error { get; } = error;
}

/// <summary>No handler is registered for a grain kind.</summary>
public sealed class UnknownGrainKindException(string kind)
    : GrainRuntimeException($"No grain handler is registered for kind '{kind}'.")
{
    /// <summary>The kind that has no handler.</summary>
    public string Kind { get; } = kind;
}
