global using Drydock.Runtime;
